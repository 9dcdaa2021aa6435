// Grafana's own generated types, shaped for checking dashboard JSON
// (tests/dashboards/schema_check.py writes one constant per panel, target,
// variable and annotation, typed with these).
//
// Two sources, each checked on its own:
//   GrafanaSchema: @grafana/schema (the dashboard kind and panel configs
//                  Grafana itself is built from);
//   Foundation:    @grafana/grafana-foundation-sdk (Grafana's generated SDK
//                  types, which also carry the Prometheus query type).

import type * as S from '@grafana/schema';
import type * as FD from '@grafana/grafana-foundation-sdk/dashboard';
import type * as FP from '@grafana/grafana-foundation-sdk/prometheus';

// TypeScript does not accept the literal "absolute" where a string enum
// member (ThresholdsMode.Absolute = "absolute") is expected; JSON only has
// literals. Lit<T> turns every string enum into the union of its values.
// It also makes every field optional: the generated types mark fields that
// have a default in Grafana's schema as required, and Grafana fills those in
// when it loads a dashboard. What is checked is what the JSON says: every key
// must be known (excess-property checks) and every value of the right type.
export type Lit<T> = T extends string
  ? string extends T
    ? string
    : `${T}`
  : T extends number | boolean | bigint | symbol | null | undefined
    ? T
    : T extends readonly (infer U)[]
      ? Lit<U>[]
      : T extends object
        ? { [K in keyof T]?: Lit<T[K]> }
        : T;

// A panel with the plugin's own options and custom field config in place of
// the generic Record<string, unknown> (where any key would pass).
type WithPluginConfig<P, O, FC, FCS, FCD> = Omit<P, 'options' | 'fieldConfig' | 'targets'> & {
  options?: O;
  fieldConfig?: Omit<FCS, 'defaults'> & { defaults: Omit<FCD, 'custom'> & { custom?: FC } };
};

// Grafana's Prometheus query model (the targets of every memhp panel).
type PromQuery = Omit<FP.Dataquery, '_implementsDataqueryVariant'>;

// What Grafana's Prometheus annotation support reads from the annotation
// itself rather than from its target (processEvents: tagKeys, titleFormat,
// textFormat, useValueForTime). @grafana/schema's AnnotationQuery is
// data-source neutral and does not list them; the SDK's does.
type PromAnnotationFields = Pick<FD.AnnotationQuery, 'tagKeys' | 'titleFormat' | 'textFormat' | 'useValueForTime'>;

/** For panel types without a custom field config: any key there is unknown. */
export type NoCustom = Record<string, never>;

export namespace GrafanaSchema {
  export type Dashboard = Lit<Omit<S.Dashboard, 'panels' | 'templating' | 'annotations'>>;
  export type Panel<O, FC> = Lit<WithPluginConfig<S.Panel, O, FC, S.FieldConfigSource, S.FieldConfig>>;
  export type Row = Lit<Omit<S.RowPanel, 'panels'>>;
  export type Target = Lit<S.DataQuery & PromQuery>;
  export type Variable = Lit<S.VariableModel>;
  export type Annotation = Lit<S.AnnotationQuery<S.DataQuery & PromQuery> & PromAnnotationFields>;
}

export namespace Foundation {
  export type Dashboard = Lit<Omit<FD.Dashboard, 'panels' | 'templating' | 'annotations'>>;
  export type Panel<O, FC> = Lit<WithPluginConfig<FD.Panel, O, FC, FD.FieldConfigSource, FD.FieldConfig>>;
  export type Row = Lit<Omit<FD.RowPanel, 'panels'>>;
  export type Target = Lit<PromQuery>;
  export type Variable = Lit<FD.VariableModel>;
  export type Annotation = Lit<Omit<FD.AnnotationQuery, 'target'> & { target?: PromQuery }>;
}
