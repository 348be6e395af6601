"""early_stop: the callback (`callback.EarlyStop`) and its stopping rules (`rules`); card: README.md."""
