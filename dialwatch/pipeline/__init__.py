"""One check of one account, end to end: `cycle.run_cycle` composes the stages that the
other packages define, and the stages that read or write the store on their behalf."""
