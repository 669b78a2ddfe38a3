"""One-shot device check: the torch-only parts of the GPU path, on random Qwen2.5 weights.

    python -m benchmarks.gpu_check [--models 0.5b,1.5b,3b] [--json out.json]
    python -m benchmarks.gpu_check --smoke [--json out.json]   # CPU, tiny shapes (CI)

Nothing of the CUDA path runs in the test suite, and the GPU machine this project is
sometimes lent has no Ray, vLLM or Gymnasium and nothing to download (docs/development.md,
"The device check", says what to carry and how long this takes). So this command needs
torch, transformers and the project's own torch-only modules, builds each model from
its shape (:class:`~agents.analysis.memory_plan.ModelShape`, random weights, no download),
and checks, per model:

(a) a learner step: REX-RAG's loss (``clipped_surrogate`` + k3 KL, ``losses.py``) on a
    REX-RAG-shaped batch (``benchmarks/learner.py``'s trajectories, probes filtered and
    corrected by ``build_learner_batch``), in bfloat16 through FSDP2 (``sharding.py``,
    world size 1, NCCL; gloo on CPU) with activation checkpointing, two micro-batches,
    clipping and AdamW; its peak CUDA memory against ``rexrag plan``'s arithmetic
    (:func:`~agents.analysis.memory_plan.plan_layouts`) for the same shapes;
(b) :class:`~agents.llm.hf.HFGenerator`'s tokens/s at batch 16 and 64 against
    ``model.generate`` on the same prompts;
(c) the generator's sampling log-probs against the learner's scoring
    (:class:`~agents.rexrag.logprobs.TokenScorer` through FSDP) in bfloat16, with the
    logits made peaked (random weights give near-uniform ones, under which every token
    has log-prob ~ -log V and an off-by-one position or a wrong temperature changes
    nothing); a planted off-by-one (the sampler's log-probs one position late) and a
    planted wrong temperature (scored at 1) must show large differences;
(d) the correction modes (``correction.py``), GRPO advantages and the loss on the device
    equal to CPU (in float64: see ``pure_math.DEVICE_TOLERANCE``).

One module a part (``learner_step.py``, ``generation.py``, ``agreement.py``,
``pure_math.py``), the models and sizes in ``models.py``, the command in ``command.py``.
Every row says PASS, FAIL or SKIP; the command exits 1 if a row failed. It prints one
table (markdown, with torch/CUDA/transformers versions and the GPU) and, with
``--json``, writes the rows after every model, so a run cut short keeps what it measured.
Not exercised: Ray, RLlib's Learner and LearnerGroup, vLLM, the environment, several
learners (NCCL collectives across GPUs), CPU offload.
"""
