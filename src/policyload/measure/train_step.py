"""The first DPO training steps, measured: TRL's own `DPOTrainer` runs real optimizer steps in a
fresh process, and the allocator's record of live tensor bytes is read per phase.

Run in a child forked by `FreshProcessServer` (request `{"train": {...}}`). The trainer is built as
the recipe builds it (`policyload.plan.trainer.build_dpo_trainer`, with the case's `TrainOptions`
as `DPOConfig` fields and `max_steps=STEPS`), then `trainer.train()` runs `STEPS` (2) optimizer
steps of one batch each: the first isolates the components (AdamW's state is created in its
`optimizer.step()`), the second is a step that starts with that state, the step the plan describes.

Where the phases are hooked (TRL 1.16 `trainer/dpo_trainer.py` `_compute_loss`, transformers 5.24
`trainer.py` `_inner_training_loop` / `training_step`), each boundary a mark, only between the
Trainer's `on_step_begin` and `on_step_end` callbacks (the precomputed reference log-probs of
`__init__` are no part of the step):

* policy forward: a forward pre-hook and hook on `trainer.model` (the PEFT model for LoRA) while
  gradients are enabled (`outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)`,
  dpo_trainer.py:1299). TRL 1.16 runs it *before* the reference forward.
* reference forward: the same hooks under `torch.no_grad()` (dpo_trainer.py:1327-1338): on
  `trainer.ref_model` for a full fine-tune, on `trainer.model` with the adapter disabled for LoRA.
* backward: `trainer.accelerator.backward`, wrapped (trainer.py:2126).
* optimizer step: the `on_pre_optimizer_step` and `on_optimizer_step` callbacks, either side of
  `self.optimizer.step()` (trainer.py:1942-1944).

What is read, per mark: the live bytes the allocator holds, and between consecutive marks the
peak. On CUDA: `torch.cuda.memory_allocated` and `max_memory_allocated`, the peak reset at every
mark. On CPU: the CPU allocator's own record of every allocation and free, the memory events of
`torch.profiler` with `profile_memory=True` (c10's `reportMemoryUsage`, the same events
`profile().key_averages()` sums), replayed in time order. The profiler starts before the trainer
is built, so the record counts every tensor the trainer's models and step allocate. A checkpoint's
memory mapping is reported to the profiler too, as one allocation of the file's size when
safetensors maps it (seen on the bfloat16 Qwen2-0.5B shape: one `[memory]` event of 988,097,824
bytes, the file's size, outside any op), and it counts whole for as long as any tensor views it
(a 4-bit load's embedding keeps the whole bfloat16 file mapped). Those events (an allocation or
free of exactly a weight file's size) are left out of the replay; in their place the pages of the
mapping that the models' tensors do use are read from the machine once the trainer is built (the
file-backed resident pages under the models' storages, /proc/self/pagemap, after a read of every
page: `cpu_mapped_model_bytes`) and added to every figure. This is the DPO bill's measured total
(private memory plus the file-backed pages under live tensors), with the allocator's record in
place of RssAnon. The host figure is the process's VmHWM over construction and step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

#: Optimizer steps run: the first (AdamW's state is created in its `optimizer.step()`, so it isolates
#: the state) and the second (a step that starts with the state: the step the plan describes,
#: `policyload.plan.step`, and every later step of the same shapes).
STEPS = 2
#: The phases of one DPO step, in the order TRL 1.16 runs them.
PHASES = ("policy_forward", "reference_forward", "backward", "optimizer_step")
#: Words of the preference rows (`preference_rows`): each is one token of `plan.trainer.word_tokenizer`.
PROMPT_WORDS = 8
CPU_SOURCE = (
    "CPU allocator's record of live tensor bytes (torch.profiler memory events, profile_memory=True), "
    "from before the trainer was built, the checkpoint's mapping left out; plus the file-backed resident "
    "pages under the models' storages (/proc/self/pagemap)"
)
CUDA_SOURCE = "cuda allocator: memory_allocated at each mark, max_memory_allocated between marks (reset at each)"


def preference_rows(batch_size: int, max_length: int) -> list[dict]:
    """`batch_size` rows whose prompt + chosen and prompt + rejected each tokenize to more than
    `max_length` tokens, so that TRL's collator (`DataCollatorForPreference`, dpo_trainer.py:383-386)
    truncates every sequence to `max_length`, and the padded length is `max_length` exactly, as the
    plan assumes. One word is one token of `word_tokenizer`; `PROMPT_WORDS` of prompt, then
    `max_length` words of completion (plus TRL's end-of-sequence token)."""
    rows = []
    for row in range(batch_size):
        prompt = " ".join(f"p{row}w{i}" for i in range(PROMPT_WORDS))
        chosen = " ".join(f"c{i % 50}" for i in range(max_length))
        rejected = " ".join(f"r{i % 50}" for i in range(max_length))
        rows.append({"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected})
    return rows


class PhaseMarks:
    """Marks at the step's phase boundaries; the allocator's live bytes at each and the peak between.

    `mark(name)` is called at each boundary (`"policy_forward:begin"` ...). On CUDA it reads the
    allocator there; on CPU it leaves a `record_function` event in the profiler's trace, and
    `readout` replays the profiler's memory events against those marks.
    """

    PREFIX = "policyload:"

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.names: list[str] = []
        #: The Trainer's step being run (1, 2, ...): mark names are "<step>/<phase>:<begin|end>".
        self.step = 0
        self.readings: list[dict] = []  # CUDA: {"live", "peak_since_previous"}
        self.shapes: list[list[int]] = []

    def mark(self, name: str) -> None:
        import torch

        self.names.append(f"{self.step}/{name}")
        if self.cuda:
            torch.cuda.synchronize()
            self.readings.append(
                {"live": torch.cuda.memory_allocated(), "peak_since_previous": torch.cuda.max_memory_allocated()}
            )
            torch.cuda.reset_peak_memory_stats()
        else:
            with torch.profiler.record_function(self.PREFIX + self.names[-1]):
                pass

    def readout_cuda(self) -> list[dict]:
        return [{"name": name, **reading} for name, reading in zip(self.names, self.readings, strict=True)]

    def readout_cpu(self, profile, mapping_sizes=()) -> list[dict]:
        """Replay the profiler's CPU memory events in time order: live bytes at each mark (relative
        to the profiler's start) and the peak since the previous mark; allocations and frees of
        exactly one of `mapping_sizes` bytes (the checkpoint's files: their mapping) left out."""
        from torch.autograd import DeviceType
        from torch.autograd.profiler import MEMORY_EVENT_NAME

        cpu = (DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP)
        events = []
        for event in profile.profiler.kineto_results.events():
            name = event.name()
            if name == MEMORY_EVENT_NAME and event.device_type() in cpu and abs(event.nbytes()) not in mapping_sizes:
                events.append((event.start_ns(), 1, event.nbytes(), None))
            elif name.startswith(self.PREFIX):
                events.append((event.start_ns(), 0, 0, name.removeprefix(self.PREFIX)))
        events.sort(key=lambda item: (item[0], item[1]))
        live, peak, result = 0, 0, []
        for _, _, nbytes, mark in events:
            if mark is None:
                live += nbytes
                peak = max(peak, live)
            else:
                result.append({"name": mark, "live": live, "peak_since_previous": max(peak, live)})
                peak = live
        if [item["name"] for item in result] != self.names:
            raise RuntimeError(f"profiler trace has marks {[i['name'] for i in result]}, expected {self.names}")
        return result


def marks_of_step(marks: list[dict], step: int) -> list[dict]:
    """The marks of the Trainer's step `step` (1-based), their names without the step."""
    prefix = f"{step}/"
    return [{**item, "name": item["name"].removeprefix(prefix)} for item in marks if item["name"].startswith(prefix)]


def phase_readings(marks: list[dict], offset: int = 0) -> dict:
    """Per phase: live bytes at its begin and end and its peak (`offset` added to each: on CPU the
    mapped weights, left out of the allocator's replay); the step's peak over every interval from the first mark to
    the last (the gaps between phases included: the DPO loss between reference forward and backward)."""
    index = {item["name"]: i for i, item in enumerate(marks)}
    phases = {}
    for phase in PHASES:
        begin, end = index.get(f"{phase}:begin"), index.get(f"{phase}:end")
        if begin is None or end is None:
            continue
        peak = max(marks[i]["peak_since_previous"] for i in range(begin + 1, end + 1))
        phases[phase] = {
            "live_before_bytes": marks[begin]["live"] + offset,
            "live_after_bytes": marks[end]["live"] + offset,
            "peak_bytes": max(peak, marks[begin]["live"]) + offset,
        }
    step_peak = max(item["peak_since_previous"] for item in marks[1:])
    return {"phases": phases, "step_peak_bytes": max(step_peak, marks[0]["live"]) + offset}


def isolated_components(phases: dict) -> dict:
    """What the phase boundaries isolate (bytes; absent where the phases do not allow it):

    * `step_start`: live when the policy forward begins: weights (policy, reference, adapter) and the batch;
    * `activations`: kept across the policy forward (its end minus its begin): what autograd saves,
      and the forward's outputs (TRL's fused LM head returns per-token log-probs, not logits);
    * `reference_forward`: the reference forward's transient (its peak minus its begin);
    * `gradients`: live when `optimizer.step()` is called minus live when the policy forward began:
      what the optimizer receives. Right after backward the step's graph still holds a little more
      until `training_step` returns: with LoRA and gradient checkpointing, the embedding output that
      `enable_input_require_grads` (TRL 1.16 dpo_trainer.py:717-718) made a leaf, and its `.grad`
      (2 x rows x length x hidden in the embedding's dtype: 0.87 MiB on the Qwen2-0.5B shape at
      batch 1 x length 128); that is in the backward phase's readings, not in this component;
    * `optimizer_state`: growth across the first `optimizer.step()` (AdamW's state is created there).
    """
    result = {}
    policy, reference = phases.get("policy_forward"), phases.get("reference_forward")
    step = phases.get("optimizer_step")
    if policy:
        result["step_start"] = policy["live_before_bytes"]
        result["activations"] = policy["live_after_bytes"] - policy["live_before_bytes"]
    if reference:
        result["reference_forward"] = reference["peak_bytes"] - reference["live_before_bytes"]
    if policy and step:
        result["gradients"] = step["live_before_bytes"] - policy["live_before_bytes"]
    if step:
        result["optimizer_state"] = step["live_after_bytes"] - step["live_before_bytes"]
    return result


def _hook_phases(trainer, marks: PhaseMarks) -> None:
    """Put the marks at TRL's and the Trainer's real calls (module docstring)."""
    import torch
    from transformers import TrainerCallback

    in_step = [False]

    def forward_phase() -> str:
        return "policy_forward" if torch.is_grad_enabled() else "reference_forward"

    def before_forward(module, args, kwargs):
        if in_step[0]:
            marks.mark(f"{forward_phase()}:begin")
            if forward_phase() == "policy_forward" and "input_ids" in kwargs:
                marks.shapes.append(list(kwargs["input_ids"].shape))

    def after_forward(module, args, kwargs, output):
        if in_step[0]:
            marks.mark(f"{forward_phase()}:end")

    for model in {id(m): m for m in (trainer.model, trainer.ref_model) if m is not None}.values():
        model.register_forward_pre_hook(before_forward, with_kwargs=True)
        model.register_forward_hook(after_forward, with_kwargs=True)

    backward = trainer.accelerator.backward

    def marked_backward(loss, **kwargs):
        marks.mark("backward:begin")
        backward(loss, **kwargs)
        marks.mark("backward:end")

    trainer.accelerator.backward = marked_backward

    class Marks(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            marks.step += 1
            in_step[0] = True

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            marks.mark("optimizer_step:begin")

        def on_optimizer_step(self, args, state, control, **kwargs):
            marks.mark("optimizer_step:end")

        def on_step_end(self, args, state, control, **kwargs):
            in_step[0] = False

    trainer.add_callback(Marks())


@contextlib.contextmanager
def stdout_to_stderr():
    """File descriptor 1 pointed at 2 for the block: the Trainer prints its closing metrics
    (`PrinterCallback`) and the profiler its notices, and a forked child's stdout is the fresh-process
    server's reply channel."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def measure_train_step_in_this_process(request: dict) -> dict:
    """Build the trainer of `request` (`spec`, `options`, `train`: DPOConfig fields), run `STEPS`
    optimizer steps, return the marks' readings per step and the host figures (module docstring)."""
    with stdout_to_stderr():
        return _measure_train_step(request)


def _measure_train_step(request: dict) -> dict:
    import torch

    from ..plan import DPOOptions
    from ..plan.trainer import build_dpo_trainer
    from ..spec import LoadSpec
    from . import host_memory
    from .rss import peak_rss_bytes, reset_peak_rss

    spec = LoadSpec(**request["spec"])
    options = DPOOptions(**request["options"])
    train = dict(request["train"])
    # STEPS steps of one batch each: the rows of STEPS batches.
    rows = preference_rows(STEPS * train["per_device_train_batch_size"], train["max_length"])
    cuda = torch.cuda.is_available()
    if not cuda:
        # transformers 5 loads weights on a thread pool (core_model_loading.py:1866-1873), and the
        # profiler records allocations of the threads it runs on only: the weights would be missing
        # from the record. Sequential loading (transformers' own switch) allocates the same tensors.
        os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = "1"
        # bf16 autocast on CPU: TrainingArguments refuses bf16 without a GPU unless `use_cpu` is set
        # (transformers 5.24 training_args.py, "Your setup doesn't support bf16/gpu").
        train["use_cpu"] = True
    marks = PhaseMarks(cuda)
    output_dir = tempfile.mkdtemp(prefix="policyload-train-")
    try:
        reset_peak_rss()
        baseline = host_memory.proc_status()
        profile = (
            contextlib.nullcontext()
            if cuda
            else torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        )
        with profile:
            trainer = build_dpo_trainer(
                spec, options, rows, output_dir,
                max_steps=STEPS, logging_strategy="no", save_strategy="no", disable_tqdm=True, **train,
            )
            mapped = 0
            if not cuda:
                storages = [s for m in (trainer.model, trainer.ref_model) if m is not None
                            for s in host_memory.live_storages(m)]
                host_memory.touch(storages)
                mapped = host_memory.file_backed_resident_bytes(storages)
            _hook_phases(trainer, marks)
            trainer.train()
        mapping_sizes = {os.path.getsize(path) for path in host_memory.checkpoint_files(spec.model_name_or_path)}
        readings = marks.readout_cuda() if cuda else marks.readout_cpu(profile, mapping_sizes)
        return {
            "train_marks": readings,
            "train_batch_shape": marks.shapes[0] if marks.shapes else None,
            "train_cpu_mapped_model_bytes": mapped,
            "train_source": CUDA_SOURCE if cuda else CPU_SOURCE,
            "train_host_peak_bytes": max(0, peak_rss_bytes() - baseline["rss"]),
            "train_host_vmhwm_bytes": peak_rss_bytes(),
            "train_device": "cuda" if cuda else "cpu",
            "train_trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "train_steps": [phase_readings(marks_of_step(readings, step), mapped) for step in range(1, STEPS + 1)],
        }
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
