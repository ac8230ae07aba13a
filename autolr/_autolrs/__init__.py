"""AutoLRS internals: the framework-free stage search and the in-loop executor."""
