"""The data plane and what it runs on: repository, registry, runtimes, batching. No HTTP."""
