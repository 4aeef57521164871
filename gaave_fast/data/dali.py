"""NVIDIA DALI input pipeline for file-based datasets (GPU JPEG decode where a GPU exists).

The file reader's label is the *dataset row* of each file, so every output maps back to its
sample; class labels and face boxes are looked up by that row (boxes inside the graph, from a
constant ``[N, 4]`` table, so shuffling and sharding cannot misalign them). The reader pads
its shard and the iterator drops the padding (``pad_last_batch=True`` with
``LastBatchPolicy.PARTIAL``): each row comes once per epoch, across shards too.

DALI is imported only when a pipeline is built, so :mod:`gaave_fast.data` works without it.
Decoding follows :class:`~gaave_fast.data.FaceDataset`'s recipe (no EXIF rotation, box clipped
to the image, antialiased bilinear resize in float, /255, normalize, CHW), so the DALI and
PIL paths agree to decoder tolerance.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .dataset import FaceDataset, clip_box

READER_NAME = "Reader"


def dali_available() -> bool:
    """True when ``nvidia.dali`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):
        return False


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"gpu"`` when CUDA is available, else ``"cpu"``; ``"cuda"`` = ``"gpu"``."""
    if device not in ("auto", "cpu", "gpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if device == "cuda" else device


def crop_table(dataset: FaceDataset, rows: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """int32 [len(dataset), 4] ``(x0, y0, width, height)`` decode window of each row in ``rows``.

    ``sizes`` is int64 [len(dataset), 2] image ``(width, height)``; rows outside ``rows`` stay 0.
    Raises ValueError naming the rows whose box is bad (validate and exclude them first).
    """
    table = np.zeros((len(dataset), 4), np.int32)
    bad = []
    for r in rows:
        window = clip_box(dataset.boxes[r], *sizes[r])
        if window is None:
            bad.append(int(r))
            continue
        x0, y0, x1, y1 = window
        table[r] = x0, y0, x1 - x0, y1 - y0
    if bad:
        raise ValueError(f"{dataset.name}: bad boxes or unknown image sizes at rows {bad[:10]}; "
                         "exclude the rows gaave_fast.data.validate() reports")
    return table


def build_dali_pipeline(
    dataset: FaceDataset,
    rows: Sequence[int] | np.ndarray | None = None,
    *,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    device_id: int | None = None,
    shard_id: int = 0,
    num_shards: int = 1,
    shuffle: bool = False,
    flip: bool = False,
    seed: int = 0,
    sizes: np.ndarray | None = None,
):
    """Build a DALI pipeline reading ``rows`` (default all) of a file-based dataset.

    Args:
        dataset: a :class:`FaceDataset` with ``image_size`` set; its ``mean``/``std`` apply.
        rows: dataset rows to read (repeats allowed, e.g. oversampling); excluded rows omitted.
        batch_size: samples per batch (the last one of a shard may be smaller).
        workers: DALI CPU threads (default: all CPUs).
        device: ``"gpu"`` decodes with nvJPEG (``device="mixed"``) and resizes on the GPU;
            ``"cpu"`` runs all on the CPU (``device_id=None``); ``"auto"`` picks the GPU if CUDA is up.
        device_id: CUDA device for ``"gpu"`` (default: the current one).
        shard_id, num_shards: read shard ``shard_id`` of ``num_shards`` contiguous shards.
        shuffle: reshuffle the file list every epoch (the same order on all shards, seeded).
        flip: random horizontal flip with probability 0.5 (training).
        seed: seed of the shuffle and the flips.
        sizes: int64 [len(dataset), 2] image ``(width, height)`` (from
            :func:`~gaave_fast.data.validation.scan_files`); read from the file headers when
            ``None`` and the dataset has boxes.

    Returns:
        A built ``nvidia.dali.Pipeline`` with outputs ``image`` float32 N×3×H×W and ``row``
        int32 N×1, and a file reader named ``"Reader"``.
    """
    from nvidia.dali import fn, pipeline_def, types

    if dataset.image_size is None:
        raise ValueError("the DALI pipeline batches images: give the dataset an image_size")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must lie in 0..num_shards-1 = {num_shards - 1}, got {shard_id}")
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise ValueError("no rows to read")
    device = resolve_device(device)
    if device == "gpu" and device_id is None:
        device_id = torch.cuda.current_device()
    table = None
    if dataset.boxes is not None:
        if sizes is None:
            from .validation import scan_files

            sizes = scan_files(dataset, np.unique(rows), decode=False, workers=workers, progress=False)[1]
        table = crop_table(dataset, np.unique(rows), sizes)
    paths = dataset.paths
    height, width = dataset.image_size
    # crop_mirror_normalize works in 0..255 units: scale the [0, 1] mean/std by 255.
    mean = [255.0 * v for v in (dataset.mean or (0.0, 0.0, 0.0))]
    std = [255.0 * v for v in (dataset.std or (1.0, 1.0, 1.0))]
    decoder_device = "mixed" if device == "gpu" else "cpu"
    decoder_args = {"device": decoder_device, "output_type": types.RGB, "adjust_orientation": False}
    if device == "gpu":  # nvJPEG's default chroma upsampling differs from libjpeg-turbo's (and PIL's)
        decoder_args["jpeg_fancy_upsampling"] = True
    reader_args = {"shard_id": shard_id, "num_shards": num_shards, "pad_last_batch": True, "name": READER_NAME}
    if shuffle:
        reader_args.update(shuffle_after_epoch=True, shuffle_after_epoch_seed=seed)

    @pipeline_def
    def graph():
        encoded, row = fn.readers.file(files=[paths[r] for r in rows], labels=rows.tolist(), **reader_args)
        if table is None:
            image = fn.decoders.image(encoded, **decoder_args)
        else:
            window = types.Constant(table, device="cpu")[row[0]]  # the row's (x0, y0, w, h)
            image = fn.decoders.image_slice(encoded, window[0:2], window[2:4], **decoder_args)
        image = fn.resize(image, resize_x=width, resize_y=height, interp_type=types.INTERP_LINEAR,
                          antialias=True, dtype=types.FLOAT)
        mirror = fn.random.coin_flip(probability=0.5) if flip else 0
        image = fn.crop_mirror_normalize(image, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std,
                                         mirror=mirror)
        return image, row

    threads = (os.cpu_count() or 1) if workers is None else max(1, workers)
    pipe = graph(batch_size=batch_size, num_threads=threads,
                 device_id=device_id if device == "gpu" else None, seed=seed)
    pipe.build()
    return pipe


class DaliLoader:
    """Iterate a DALI pipeline in the loader contract: dicts ``image``, ``label``, ``index``.

    ``image`` float32 N×3×H×W (on the GPU for ``device="gpu"``), ``label`` and ``index``
    int64 [N] on the CPU (``index`` = dataset row). Arguments as :func:`build_dali_pipeline`.
    Each ``for`` loop is one epoch; DALI cannot restart an epoch that was left half-way, so
    a loop broken early resumes where it stopped.
    """

    backend = "dali"

    def __init__(self, dataset: FaceDataset, rows: Sequence[int] | np.ndarray | None = None, **options) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        self.dataset = dataset
        self.pipeline = build_dali_pipeline(dataset, rows, **options)
        self._labels = torch.tensor(dataset.labels, dtype=torch.int64)
        self._iterator = DALIGenericIterator([self.pipeline], ["image", "index"], reader_name=READER_NAME,
                                             last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True,
                                             prepare_first_batch=False)  # decode errors surface in __iter__

    def __len__(self) -> int:
        return len(self._iterator)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        iterator = iter(self._iterator)
        while True:
            try:
                out = next(iterator)
            except StopIteration:
                return
            except RuntimeError as err:  # DALI stops on a file it cannot decode
                raise RuntimeError(f"DALI pipeline failed on {self.dataset.name}: {err}\n"
                                   "Run gaave_fast.data.validate(dataset) and pass its report as "
                                   "make_loader(..., exclude=report), or use check='full'.") from err
            index = out[0]["index"].view(-1).to(torch.int64)
            if index.numel() == 0:  # a shorter shard ends with an empty, all-padding batch
                continue
            yield {"image": out[0]["image"], "label": self._labels[index], "index": index}
