"""The paper's recipes as resumable pipelines of stages: pipeline.py (stages with stamps, the lock,
signals), paper.py (Table 1 and Table 2 as stages of the project's tools), toy.py (the inputs of
the recipe at toy scale). Run through examples/run_redi_1.5b.sh and examples/run_ablations_1.5b.sh."""
