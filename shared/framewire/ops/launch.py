"""Starting one stage's process: found in the registry, loaded through its declaration."""

from __future__ import annotations

import faulthandler
import signal

from framewire.config import Settings
from framewire.procutil import keep_freed_memory
from framewire.runtime import Stage, StopSignal, run_stage
from framewire.topology import topology


def run_service(name: str, settings: Settings, stop: StopSignal | None = None,
                demo: bool = False) -> None:
    """Run the stage ``name`` in this process until SIGTERM/SIGINT (or ``stop``).

    A source's entry is its ``main(settings, stop, demo)``; any other stage's is a ``Stage``
    subclass, which the runtime's loop runs. Its Kafka clients connect as the stage's own
    principal unless ``kafka_principal`` says otherwise.
    """
    spec = topology(settings).stage(name)  # ConfigError naming the stages
    if settings.kafka_principal is None:  # on a secured cluster, each stage is its own user
        settings = settings.model_copy(update={"kafka_principal": name})
    keep_freed_memory()
    # `kill -USR1 PID` writes every thread's stack to the service's log: what a hung one waits on
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    code = spec.load()
    # a source, or a stage with a consume loop of its own (analytics, on faust), is a main()
    if spec.is_source or not isinstance(code, type):
        code(settings, stop, demo)
        return
    if not (isinstance(code, type) and issubclass(code, Stage)):
        raise TypeError(f"stage {name}: entry {spec.entry} is not a framewire.runtime.Stage")
    run_stage(code(settings), settings, stop)
