"""Backtests: a rules file replayed over an account's real ledger (`dialwatch backtest`)."""
