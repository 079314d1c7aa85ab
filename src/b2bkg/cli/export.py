"""``b2bkg export --model RUN_DIR --out FILE.onnx``: over :func:`b2bkg.campaign.onnx.export_onnx`."""

from __future__ import annotations

import click


@click.command("export")
@click.option("--model", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder from b2bkg train.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--exporter", type=click.Choice(["auto", "legacy", "dynamo"]), default="auto", show_default=True,
              help="torch.onnx exporter (auto: legacy TorchScript, then dynamo).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (legacy exporter; dynamo uses >= 18).")
@click.option("--weights", default="auto", show_default=True, help="auto | best | final | a .safetensors file.")
def command(run_dir, out, exporter, opset, weights):
    """Export a model's sampling network to ONNX (checked against PyTorch with onnxruntime)."""
    from b2bkg.campaign.onnx import export_onnx

    r = export_onnx(run_dir, out, exporter=exporter, opset=opset, weights=weights)
    for note in r["warnings"]:
        click.echo(f"export note: {note}", err=True)
    lat = ", ".join(f"{k}{tuple(v)}" for k, v in r["latents"].items()) or "none"
    click.echo(f"wrote {r['path']} ({r['bytes'] / 1e6:.3g} MB, {r['model']}, {r['exporter']} exporter, opset {r['opset']}): "
               f"inputs {r['inputs']} (per-event latents {lat}) -> outputs {r['outputs']}; "
               f"max |ONNX - PyTorch| = {r['max_abs_diff']:.2g}")
