"""Shared helpers of the rankiqa toolkit (errors, atomic files, list files, metrics).

The pipeline itself lives in ``data_prep/`` (images to lists), ``pylayers/`` (lists to blobs, loss),
``prototxts/`` (nets, solvers) and ``tools/`` (train, eval, predict, bench); what more than one of
them needs lives here, once.
"""
