"""Code that runs beside each task on the compute nodes: standard library only.

The node-side supervisors of every backend (``launchers/*/supervisor.py``, the Ray actor) and
the daemon share it: how a file is written so readers never see half of it (:mod:`.files`), how
a process is named across pid reuse (:mod:`.files`), what a task leaves in its attempt's folder
when it ends (:mod:`.record`), and the rank variables each task sees (:mod:`.rank_env`).

The supervisors run with ``python -I -S`` on nodes that may have nothing of ours installed but
this folder on a shared file system: nothing here imports anything outside the standard library
(a test checks it), and nothing imports ``pathlib`` (8 ms of start per task).
"""
