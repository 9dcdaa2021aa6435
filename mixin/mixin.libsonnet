// memhp's monitoring mixin: its Prometheus alerts, recording rules and Grafana
// dashboards, as kube-prometheus and mixtool consume mixins (docs/alerts.md,
// "Monitoring mixin").
//
// One source: the data under generated/ is written by the generators of the
// committed files (alerts/generate.py from memhp/thresholds.yaml, dashboards/build.py),
// and tests/mixin checks that this evaluates to exactly those files. To change a
// threshold, a selector or the runbook base URL, edit memhp/thresholds.yaml and
// regenerate; or override the result here in jsonnet, as with any mixin.
//
// The folder is self-contained (no import outside it), so jsonnet-bundler can
// vendor it alone: jb install github.com/memhp/memhp/mixin@main
local alerts = import 'generated/alerts.json';
local rules = import 'generated/rules.json';

{
  // groups+: so the mixin composes with others into one object.
  prometheusAlerts+:: { groups+: alerts.groups },
  prometheusRules+:: { groups+: rules.groups },
  grafanaDashboards+:: import 'generated/dashboards.libsonnet',
}
