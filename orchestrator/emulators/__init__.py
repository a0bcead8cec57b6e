"""Emulators of the services the targets talk to, for tests and for rehearsing a rollout on a
laptop (`orchestrate emulator NAME`). Each says in its docstring what it emulates and what it
does not."""
