"""The engine: how any action is executed, supervised and fenced.

* :mod:`~reconciler.engine.registry`: how an action kind plugs in (prepare, run, record,
  product check) and which registry the service uses;
* :mod:`~reconciler.engine.execute`: perform one claimed action and record its outcome,
  every write fenced by the lease token;
* :mod:`~reconciler.engine.runner`: the child process, its heartbeat, timeout and stop;
* :mod:`~reconciler.engine.child`: the child's entry point;
* :mod:`~reconciler.engine.environment`: the environment the science tools run in.

What each action does lives in :mod:`reconciler.steps`.
"""
