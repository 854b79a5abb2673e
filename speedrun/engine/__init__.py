"""The step and what runs it fast: the train step built, compiled or captured and reused, what the
compiler did, evaluation, and the resolution curriculum's downscaling."""
