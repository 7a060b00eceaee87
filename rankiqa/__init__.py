"""The rankiqa library: everything the commands in ``tools/`` run, stated once.

The pipeline: ``data_prep/`` (images to rank sets and fine-tuning lists) -> ``pylayers/`` (lists to blobs,
the loss) -> ``prototxts/`` (nets, solver templates) -> this library (run configuration and preparation,
the training loop, snapshots, devices, scoring, the dataset registry, the rank-set manifest) -> ``tools/``
(thin commands). ``docs/DESIGN.md`` lists the modules.
"""
