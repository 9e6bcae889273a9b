"""Site adaptation: fit a detector to a site's films from its own unannotated normal studies (``mccad adapt``).

A hospital has normal studies in quantity and annotated calcifications rarely. From a folder of normals
(``training.datasets.normals``) this module

1. splits the women (PatientID) into ``adapt``, ``calibrate`` and ``test`` parts (``split_women``, seeded);
2. inserts simulated clusters (``training.simulate.dataset``) into the films at their own pixel pitch: crops of the
   adapt women's films for training, and whole copies of every calibrate and test image for judging;
3. makes two candidates: **A**, the base detector unchanged, and **B**, the base fine-tuned on the adapt crops
   (recipe ``training/experiments/site-adapt-detector.toml``; its last epoch: a whole-image validation each epoch
   would cost a 2-core machine as much as the training);
4. gives each candidate its operating point: the lowest score threshold at which the calibrate women's real normal
   images carry at most ``target_fp_per_image`` boxes per image (:func:`threshold_for_fp_rate`);
5. keeps the candidate that finds more inserted calibration clusters at its own operating point (a tie keeps A);
6. judges both once on the test women: false positives per image on their real normals at the operating point
   with a bootstrap interval over women (:func:`fp_per_image`), FROC on their real normals plus inserted copies;
7. writes the kept detector as a model bundle (``OUT/detector``) whose card states the data, the split, every figure
   and the command, and ``OUT/adaptation.json`` with all of it.

Every step writes into a work folder and is skipped when its output is already there, so an interrupted run
resumes where it stopped (the split is checked against the one on disk: another folder or seed is refused).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from models.onnx_runtime import detection_model
from models.pipeline import BUNDLE_ROLES
from models.registry import DESCRIPTOR_PART, load_manifest
from training.datasets.normals import read_normals_folder, split_women
from training.datasets.paper_csv import read_paper_dataset
from training.datasets.readers import read_dataset
from training.datasets.samples import DatasetError, Sample
from training.evaluation.evaluate import (ImagePrediction, OperatingPoint, fp_interval_by_woman, fp_per_image,
                                         kept_indices, read_predictions, threshold_for_fp_rate, write_predictions)
from training.evaluation.froc import DEFAULT_HIT_IOU, FrocImage, froc, hit_scores
from training.evaluation.predict import load_model, predict
from training.export import export_run
from training.reissue import reissue_model
from training.simulate.dataset import make_simulated_dataset
from training.trainers.common import LAST_CHECKPOINT
from training.trainers.config import load_experiment
from training.trainers.detector import DetectorTrainConfig, train_detector

log = logging.getLogger(__name__)

#: the parts of the split, in the order women are cut into them
PARTS: dict[str, float] = {"adapt": 0.5, "calibrate": 0.2, "test": 0.3}
RECIPE = Path(__file__).resolve().parent / "experiments" / "site-adapt-detector.toml"
#: the side of a training crop in millimetres (256 px at the detector's 0.1 mm)
CROP_MM = 25.6
FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)
#: where normal images come from: a folder of DICOM normals, or the images of a public dataset with no finding at
#: all (VinDr-Mammo's reader leaves out the images of every finding other than calcification; the rest are normal)
NORMAL_FORMATS = ("normals", "vindr_mammo")


class AdaptationError(ValueError):
    """Site adaptation cannot go on; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class AdaptSettings:
    """What a site adaptation does; the defaults are the shipped recipe.

    ``seed``: the split and the simulation; ``train_crops``: simulated training crops; ``copies``: inserted copies
    of each judging image; ``epochs`` / ``samples_per_epoch``: the fine-tuning's length; ``target_fp_per_image``:
    the operating point's false positives per image on the calibration normals; ``fine_tune`` False makes only
    candidate A (the base model with a site operating point); ``workers``: processes simulating images.
    """

    seed: int = 20261207
    train_crops: int = 2400
    copies: int = 2
    epochs: int = 3
    samples_per_epoch: int = 1200
    target_fp_per_image: float = 0.25
    fine_tune: bool = True
    workers: int = 2
    n_boot: int = 2000

    def __post_init__(self) -> None:
        for name in ("train_crops", "copies", "epochs", "samples_per_epoch", "workers"):
            if getattr(self, name) < 1:
                raise AdaptationError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.target_fp_per_image <= 10:
            raise AdaptationError(f"target_fp_per_image must lie in (0, 10], got {self.target_fp_per_image}")


# ------------------------------------------------------------------------------------------------ measurements
def sensitivity_at(truth: Sequence[Sample], predictions: Sequence[ImagePrediction], op: OperatingPoint,
                   hit_iou: float = DEFAULT_HIT_IOU) -> tuple[int, int]:
    """(clusters found, clusters) at ``op``: a cluster is found when a box kept at ``op`` overlaps it at IoU >=
    ``hit_iou`` (``mccad evaluate``'s rule)."""
    by_id = {p.image_id: p for p in predictions}
    found = total = 0
    for sample in truth:
        if not sample.lesions:
            continue
        pred = by_id[sample.image_id]
        keep = kept_indices(pred, op)
        boxes = np.asarray(pred.boxes, dtype=np.float64).reshape(-1, 4)[keep]
        scores = np.asarray(pred.scores, dtype=np.float64).reshape(-1)[keep]
        lesion_scores, _ = hit_scores(sample.boxes, boxes, scores, hit_iou)
        found += int(np.isfinite(lesion_scores).sum())
        total += len(sample.lesions)
    return found, total


def froc_at_rates(truth: Sequence[Sample], predictions: Sequence[ImagePrediction]) -> dict[str, float]:
    """FROC sensitivity at ``FP_RATES`` false positives per image over every image of ``truth`` (normals add false
    positives only)."""
    by_id = {p.image_id: p for p in predictions}
    images = [FrocImage(gt_boxes=s.boxes, pred_boxes=by_id[s.image_id].boxes, pred_scores=by_id[s.image_id].scores,
                        gt_labels=s.labels, pred_labels=by_id[s.image_id].labels) for s in truth]
    curve = froc(images, fp_rates=FP_RATES)
    return {f"{rate:g}": round(value, 4) for rate, value in curve.at_rates.items()}


# ------------------------------------------------------------------------------------------------ the steps
def read_normals(path: Path, fmt: str = "normals") -> list[Sample]:
    """The normal images of a dataset (``NORMAL_FORMATS``): every DICOM under a folder (``fmt`` "normals"), or the
    images of VinDr-Mammo in its publisher's layout that carry no finding (no lesion, and the reader leaves out
    the images of other findings), DICOM only (the films' pitch is read from their headers). Archives whose every
    image holds a finding (CBIS-DDSM, CMMD) have no normals to adapt with."""
    if fmt not in NORMAL_FORMATS:
        raise AdaptationError(f"normals come from a folder of DICOM normals or a dataset with normal images "
                              f"({', '.join(NORMAL_FORMATS)}), not {fmt!r}")
    if fmt == "normals":
        return read_normals_folder(path)
    samples = [s for s in read_dataset(path, fmt) if not s.lesions and s.label == "benign" and s.is_dicom]
    if not samples:
        raise AdaptationError(f"the {fmt} dataset at {path} holds no normal DICOM image (no lesion, benign)")
    return samples


def load_split(normals: Path, work: Path, seed: int, fmt: str = "normals") -> dict[str, list[Sample]]:
    """The women's split of the normal images of ``normals`` (read as ``fmt``, see :func:`read_normals`; parts:
    ``PARTS``), written to ``work/split.json``; a split already on disk must be this one (same folder, seed and
    images), else the work folder belongs to another adaptation."""
    samples = read_normals(normals, fmt)
    parts = split_women(samples, PARTS, seed)
    record = {"normals": str(Path(normals).resolve()), "seed": seed, "fractions": PARTS,
              "parts": {name: {"women": sorted({s.patient_id for s in part}), "images": [s.image_id for s in part]}
                        for name, part in parts.items()}}
    path = work / "split.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(record)):
            raise AdaptationError(f"{work} holds the work of another adaptation (its split.json differs: other "
                                  "normals, seed or images); give a new --work folder")
    else:
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
    return parts


def site_pitch_mm(samples: Sequence[Sample]) -> float:
    """The median pixel spacing (mm) the films state (PixelSpacing, else ImagerPixelSpacing): the pitch clusters are
    rendered at, so that a calcification is as blurred by the site's sampling as a real one."""
    pitches = []
    for sample in samples:
        ds = pydicom.dcmread(sample.source, stop_before_pixels=True)
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        if spacing:
            pitches.append(float(np.mean([float(v) for v in spacing])))
    if not pitches:
        raise AdaptationError("no normal image states its pixel spacing (PixelSpacing or ImagerPixelSpacing): the "
                              "clusters' size in pixels cannot be known")
    return float(np.median(pitches))


def link_backgrounds(samples: Sequence[Sample], folder: Path) -> Path:
    """``folder`` holding one link per sample (``<woman>_<file name>.dcm``, sorted by woman then file), the form
    ``training.simulate.dataset`` takes backgrounds in; copies where the file system has no symbolic links."""
    folder.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        target = folder / f"{sample.patient_id}_{Path(sample.source).stem}.dcm"
        if target.exists() or target.is_symlink():
            continue
        try:
            target.symlink_to(Path(sample.source).resolve())
        except OSError:
            shutil.copyfile(sample.source, target)
    return folder


def simulate_part(name: str, samples: Sequence[Sample], work: Path, pitch: float, settings: AdaptSettings, *,
                  crops: bool) -> list[Sample]:
    """The simulated images of one part (training crops, or ``copies`` whole copies of each judging image with 1-3
    clusters), made once into ``work/sim/<name>`` and read back as samples."""
    out = work / "sim" / name
    csv = out / "annotations.csv"
    if not (out / "simulated.json").is_file():
        backgrounds = link_backgrounds(samples, work / "backgrounds" / name)
        seed = settings.seed + {"adapt": 1, "calibrate": 2, "test": 3}[name]
        if crops:
            make_simulated_dataset(out, settings.train_crops, seed, sources=("real",),
                                   crop=int(round(CROP_MM / pitch)), spacing_mm=pitch, clusters_per_image=(0, 2),
                                   distractors_per_image=(0, 2), backgrounds=backgrounds, workers=settings.workers)
        else:
            make_simulated_dataset(out, settings.copies * len(samples), seed, sources=("real",), crop=None,
                                   spacing_mm=pitch, clusters_per_image=(1, 3), backgrounds=backgrounds,
                                   workers=settings.workers, each_background=True)
    inserted = read_paper_dataset(csv)
    return [dataclasses.replace(s, image_id=f"inserted/{s.image_id}") for s in inserted]


class CandidateReader:
    """One candidate detector read as ``training.evaluation.predict`` reads it (the product's reading, low score floor,
    no cross-class suppression), loaded once; the runtime twin (``models.onnx_runtime``) is built at the first
    prediction that is not cached, so a resumed adaptation whose predictions are all on disk builds none."""

    def __init__(self, model_dir: Path, runtime: str, progress: bool = True) -> None:
        self.model_dir, self.runtime, self.progress = Path(model_dir), runtime, progress
        self.loaded = load_model(self.model_dir, device="cpu")
        if self.loaded.kind != "detector":
            raise AdaptationError(f"{model_dir} is not a detector")
        self._twin_built = False

    @property
    def operating_point(self) -> OperatingPoint:
        """The suppression settings (cross-class) the detector applies; the threshold is chosen by adaptation."""
        return self.loaded.operating_point

    def predictions(self, samples: Sequence[Sample], cache: Path) -> list[ImagePrediction]:
        """The predictions on ``samples``, read from ``cache`` (a predictions file) when it holds exactly them,
        else made and written there for resumption."""
        if cache.is_file():
            preds, meta = read_predictions(cache)
            same_model = all(meta.get(k) == v for k, v in self.loaded.description.items() if k != "source")
            if same_model and {p.image_id for p in preds} == {s.image_id for s in samples}:
                return preds
        if not self._twin_built:
            self.loaded.model, _ = detection_model(self.loaded.model, self.runtime, "cpu")
            self._twin_built = True
        preds = predict(self.loaded, samples, progress=self.progress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_predictions(cache, preds, {**self.loaded.description,
                                         "operating_point": self.loaded.operating_point.__dict__})
        return preds


def fine_tune(base: Path, train: Sequence[Sample], work: Path, settings: AdaptSettings, progress: bool) -> Path:
    """Candidate B's run folder: ``base`` fine-tuned on ``train`` by the recipe, its last epoch kept (resumed from
    its last checkpoint when one is there)."""
    recipe = dict(load_experiment(RECIPE).train)
    recipe.update(epochs=settings.epochs, samples_per_epoch=settings.samples_per_epoch, init_from=str(base))
    run_dir = work / "run"
    train_detector(list(train), None, DetectorTrainConfig(**recipe), run_dir, resume=True, progress=progress)
    return run_dir


def site_model_name(base_name: str) -> str:
    """The name of a detector adapted from ``base_name``: the base's name with ``-site`` once (a bundle adapted again
    keeps its name; its version says what it came from)."""
    return base_name if base_name.endswith("-site") else f"{base_name}-site"


def derived_version(base_version: str, tag: str) -> str:
    """``base_version`` with ``tag`` as build metadata: ``0.6.2`` -> ``0.6.2+site``, and ``0.6.2+mias.2`` ->
    ``0.6.2+mias.2.site`` (semantic versioning allows one ``+``; later identifiers join with dots)."""
    return f"{base_version}.{tag}" if "+" in base_version else f"{base_version}+{tag}"


def export_candidate(run_dir: Path, work: Path, base: Path) -> Path:
    """Candidate B as it would ship: the fine-tuning run's last epoch exported to a model folder
    (``work/candidate-B``) with the weights' shipping dtype, so that B is judged, and its operating point chosen, on
    the very weights the bundle holds (float16 rounding moves scores by a few thousandths). Exported again only when
    the run's last checkpoint is newer than the export (a resumed run that trained further), so a resumed adaptation
    keeps the export its cached readings were made with (:meth:`CandidateReader.predictions` checks the weights'
    hash)."""
    folder = work / "candidate-B"
    manifest = folder / "manifest.json"
    if manifest.is_file() and manifest.stat().st_mtime >= (run_dir / LAST_CHECKPOINT).stat().st_mtime:
        return folder
    base_manifest = load_manifest(base)
    return export_run(run_dir, folder, name=site_model_name(base_manifest.name),
                      version=derived_version(base_manifest.version, "candidate"),
                      training_data=f"fine-tuning run {run_dir.name} of {base_manifest.name} "
                                    f"{base_manifest.version}", synthetic_only=True, which="last")


def judge(name: str, model: Path, normals: dict[str, list[Sample]], inserted: dict[str, list[Sample]], work: Path,
          settings: AdaptSettings, runtime: str, progress: bool = True) -> dict[str, Any]:
    """One candidate's figures: its operating point on the calibration normals, then clusters found at it on the
    calibration copies, and on the test women false positives per image (interval by woman), FROC and
    sensitivity at the operating point."""
    reader = CandidateReader(model, runtime, progress)
    op = reader.operating_point
    cache = work / "predictions" / name
    cal_normals = reader.predictions(normals["calibrate"], cache / "calibrate-normals.json")
    cal_inserted = reader.predictions(inserted["calibrate"], cache / "calibrate-inserted.json")
    threshold = threshold_for_fp_rate(cal_normals, op, settings.target_fp_per_image)
    at = dataclasses.replace(op, score_thresh=threshold)
    cal_found, cal_total = sensitivity_at(inserted["calibrate"], cal_inserted, at)
    test_normals = reader.predictions(normals["test"], cache / "test-normals.json")
    test_inserted = reader.predictions(inserted["test"], cache / "test-inserted.json")
    women = [s.patient_id for s in normals["test"]]
    low, high = fp_interval_by_woman(test_normals, women, at, n_boot=settings.n_boot, seed=settings.seed)
    test_found, test_total = sensitivity_at(inserted["test"], test_inserted, at)
    return {
        "model": str(model), "score_thresh": round(threshold, 6),
        "calibrate": {"fp_per_image": round(fp_per_image(cal_normals, at), 4), "normal_images": len(cal_normals),
                      "clusters_found": cal_found, "clusters": cal_total},
        "test": {"fp_per_image": round(fp_per_image(test_normals, at), 4), "fp_per_image_ci95": [round(low, 4),
                                                                                                round(high, 4)],
                 "normal_images": len(test_normals), "women": len(set(women)),
                 "clusters_found": test_found, "clusters": test_total,
                 "froc_sensitivity_at_fp_per_image": froc_at_rates(normals["test"] + inserted["test"],
                                                                   test_normals + test_inserted)},
    }


def choose(candidates: dict[str, dict[str, Any]]) -> str:
    """The kept candidate: more calibration clusters found at its own operating point; a tie keeps ``A``."""
    def found(name: str) -> int:
        return int(candidates[name]["calibrate"]["clusters_found"])

    return "B" if "B" in candidates and found("B") > found("A") else "A"


# ------------------------------------------------------------------------------------------------ the whole run
def adapt(normals: Path, out: Path, base: Path, work: Path, settings: AdaptSettings = AdaptSettings(), *,
          command: str = "", runtime: str = "auto", progress: bool = True, fmt: str = "normals",
          version: str | None = None, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Adapt ``base`` (a detector folder) to the site whose normal films lie under ``normals`` (a folder of DICOM
    normals, or a public dataset read as ``fmt``: :func:`read_normals`); writes the kept detector to
    ``out/detector`` and returns (and writes to ``out/adaptation.json``) every figure."""
    normals, out, base, work = Path(normals), Path(out), Path(base), Path(work)
    say = on_step or (lambda text: log.info("%s", text))
    if not (base / "manifest.json").is_file():
        raise AdaptationError(f"--model {base} is not a detector folder (no manifest.json); give e.g. "
                              "models/weights/default/detector")
    if out.exists() and any(out.iterdir()):
        raise AdaptationError(f"--out {out} exists and is not empty: a bundle is written into a new folder")
    say("split the women")
    try:
        parts = load_split(normals, work, settings.seed, fmt)
    except DatasetError as exc:
        raise AdaptationError(str(exc)) from exc
    pitch = site_pitch_mm(parts["adapt"])
    say(f"insert clusters at the films' pitch ({pitch:g} mm)")
    inserted = {name: simulate_part(name, parts[name], work, pitch, settings, crops=False)
                for name in ("calibrate", "test")}
    candidates: dict[str, dict[str, Any]] = {}
    say("candidate A: the base model, operating point on the calibration normals")
    candidates["A"] = judge("A", base, parts, inserted, work, settings, runtime, progress)
    candidate_b = None
    if settings.fine_tune:
        train = simulate_part("adapt", parts["adapt"], work, pitch, settings, crops=True)
        say(f"candidate B: fine-tune on {len(train)} crops of the adapt women's films")
        candidate_b = export_candidate(fine_tune(base, train, work, settings, progress), work, base)
        candidates["B"] = judge("B", candidate_b, parts, inserted, work, settings, runtime, progress)
    kept = choose(candidates)
    say(f"kept candidate {kept}; writing the bundle")
    report = {"command": command, "normals": str(normals), "base": str(base),  # as given: a card names no host path
              "settings": dataclasses.asdict(settings), "pitch_mm": pitch,
              "split": {name: {"women": len({s.patient_id for s in part}), "images": len(part)}
                        for name, part in parts.items()},
              "inserted": {name: {"images": len(v), "clusters": sum(len(s.lesions) for s in v)}
                           for name, v in inserted.items()},
              "candidates": candidates, "kept": kept}
    write_bundle(report, out, base, candidate_b, version)
    return report


def write_bundle(report: dict[str, Any], out: Path, base: Path, candidate_b: Path | None,
                 version: str | None) -> Path:
    """``out/detector`` (the kept candidate, ``base`` or the exported ``candidate_b``, re-issued at its operating
    point, its card extended by the adaptation's figures) and ``out/adaptation.json``."""
    kept = report["kept"]
    threshold = report["candidates"][kept]["score_thresh"]
    base_manifest = load_manifest(base)
    new_version = version or derived_version(base_manifest.version, "site")
    target = out / "detector"
    out.mkdir(parents=True, exist_ok=True)
    source = candidate_b if kept == "B" and candidate_b is not None else base
    # the base kept (A) was trained on nothing of this site: its card keeps the base's own training data
    data = None if source == base else (
        f"site adaptation of {base_manifest.name} {base_manifest.version} to the normal films under "
        f"{report['normals']} ({report['split']['adapt']['images']} images of {report['split']['adapt']['women']} "
        "women with simulated clusters inserted)")
    reissue_model(source, target, {"thresholds.score_thresh": threshold}, version=new_version,
                  name=site_model_name(base_manifest.name), training_data=data, synthetic_only=source != base)
    report["carried_parts"] = carry_bundle_parts(base, out)
    (out / "adaptation.json").write_text(json.dumps(report, indent=1))
    with open(target / "MODEL_CARD.md", "a") as fh:
        fh.write("\n" + adaptation_card(report) + "\n")
    return target


def carry_bundle_parts(base: Path, out: Path) -> list[str]:
    """Copy the other parts of the bundle ``base`` belongs to (when ``base`` is a bundle's ``detector/`` folder: its
    image classifier, patch heads and descriptor head, each a model folder with a manifest) unchanged into ``out``,
    so that the adapted bundle reports what the base bundle reports, only with the site's detector. Returns the
    parts copied, in bundle order; none when ``base`` is a detector folder on its own."""
    if base.name != "detector":
        return []
    carried = []
    for part in (*BUNDLE_ROLES[1:], DESCRIPTOR_PART):
        if (base.parent / part / "manifest.json").is_file():
            shutil.copytree(base.parent / part, out / part)
            carried.append(part)
    return carried


def adaptation_card(report: dict[str, Any]) -> str:
    """The card section of an adaptation: data, split, how each candidate did, which was kept, the command."""
    lines = ["## Site adaptation", "",
             f"Made by `{report['command'] or 'mccad adapt'}` from `{report['base']}` on the normal films under "
             f"`{report['normals']}` (pitch {report['pitch_mm']:g} mm).", "",
             "Split by woman (seed {}): {}.".format(report["settings"]["seed"], ", ".join(
                 f"{name} {p['women']} women / {p['images']} images" for name, p in report["split"].items())),
             "Clusters inserted into copies of every calibrate and test image: " + ", ".join(
                 f"{name} {v['images']} images / {v['clusters']} clusters" for name, v in report["inserted"].items())
             + ".", "",
             "| candidate | threshold | calibration FP/image | calibration clusters found | test FP/image (95 % CI "
             "by woman) | test clusters found at threshold | test FROC at 0.25 / 0.5 / 1 / 2 / 4 FP per image |",
             "|---|---|---|---|---|---|---|"]
    for name, c in report["candidates"].items():
        t = c["test"]
        frocs = " / ".join(f"{v:.3f}" for v in t["froc_sensitivity_at_fp_per_image"].values())
        lines.append(f"| {name}{' (kept)' if name == report['kept'] else ''} | {c['score_thresh']:.4f} | "
                     f"{c['calibrate']['fp_per_image']:.3f} | {c['calibrate']['clusters_found']}/"
                     f"{c['calibrate']['clusters']} | {t['fp_per_image']:.3f} ({t['fp_per_image_ci95'][0]:.3f}-"
                     f"{t['fp_per_image_ci95'][1]:.3f}) | {t['clusters_found']}/{t['clusters']} | {frocs} |")
    lines += ["", "A: the base model with the site's operating point (the lowest threshold giving at most "
              f"{report['settings']['target_fp_per_image']:g} false positives per image on the calibration normals). "
              "B: the base fine-tuned on crops of the adapt women's films (`training/experiments/"
              "site-adapt-detector.toml`), operating point chosen the same way. The kept candidate found more "
              "calibration clusters at its operating point (a tie keeps A). Test women were used for nothing else."]
    return "\n".join(lines)
