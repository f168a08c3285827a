"""Easel's Script API (A1111's Script hooks, typed): script classes, their controls, the runner bound to a job,
and the built-in scripts (X/Y/Z plot, Prompt matrix, ...). Scripts sit above processing: processing calls the
bound runner through ``modules.processing.hooks.ScriptHooks``; a selectable script's ``run`` calls processing."""
