"""The parts of sandcheck.host.syscalltrace, one concern a module: the tracefs instance,
the trace_pipe line format, the task names behind the lines, the counts, the reader of
the pipe and the /proc facts about tasks."""
