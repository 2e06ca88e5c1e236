"""Turn a run folder into a deployable artefact and prove it computes what the model does.

`run.export_run` is the entry point; `formats` holds the table of what can be exported
for which task, `tasks` how each task's model meets the outside world (named inputs,
real validation batches, preprocessing), and one module per format does the writing.
"""
