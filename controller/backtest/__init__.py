"""The backtest (issue 22): what a policy would have done over a past period, fleet-wide."""
