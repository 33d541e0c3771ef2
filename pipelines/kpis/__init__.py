"""Program KPIs: what a cashback program is judged on, per period and group.

`inputs` scans the contract tables, `activity` places each order in its period and group,
`measures` computes the KPI table, `flows` the cashback money (paid, clawed back, outstanding,
fraud), `incremental` the return on cashback from randomized exposures, `cohorts` the
retention matrices, `objectives` the progress against targets, `report` the HTML page.
"""
