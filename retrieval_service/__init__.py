"""The runtime, one subpackage per stage of the flow: triton/ (the model), features/, index/,
ingest/, identify/, serving/, and evaluation/ (benches and accuracy runs). No torch here.
"""
