"""The end device's data for a job: where ``jqodi end`` reads it, and the check that it is the job's.

A job written by ``jqodi run --write-job`` names your own data by its absolute path on the machine
that wrote it (``DataConfig.name``, ``.dataset``), with the path as the scenario file wrote it
beside (``name_written``, ``dataset_written``). The end device owns the private images and often
keeps them elsewhere: ``jqodi end --data PATH`` names its copy of the end device's data and
``--dataset PATH`` its copy of the cloud's dataset folder (whose shape, classes and normalisation
the end device's images take). A job whose end-device data *is* its cloud dataset (one folder for
both, as in docs/your-own-setup.md) needs ``--data`` alone.

A copy passed so must describe the job's data: a folder of yours where the job names one (never in
place of the paper's ``data1``/``data2``), images of the job's input shape, and the class count of
the job's model; else one line (:class:`jqodi.errors.DataError`, exit code 2). The raw images stay
on the end device: only the end process loads them.
"""
from __future__ import annotations

from pathlib import Path

from jqodi.errors import DataError

__all__ = ["end_device_data_for_job", "missing_data_line"]


def _shape(s) -> str:
    return "x".join(str(int(v)) for v in s)


def missing_data_line(path: str, written: str | None, flag: str, what: str) -> str:
    """The line for a job's data path this device lacks: the path, how the scenario wrote it, and
    the flag that names this device's copy."""
    said = f" (the scenario wrote {written!r}, read from its folder on the machine that wrote the job)" \
        if written and written != path else ""
    return (f"the job's {what} {path} is not on this device{said}: pass 'jqodi end {flag} PATH' with this "
            f"device's copy")


def _override(job_value: str, path: str | None, flag: str, what: str) -> str | None:
    """``path`` (this device's copy) in place of ``job_value``, checked to be a folder or ``.npz`` that
    exists where the job names one of yours."""
    from jqodi.core.userdata import is_user_dataset

    if path is None:
        return None
    if not is_user_dataset(job_value):
        raise DataError(f"{flag} {path}: the job's {what} is {job_value!r}, not a folder of yours: run "
                        f"'jqodi end' without {flag}")
    if not Path(path).expanduser().exists():
        raise DataError(f"{flag} {path}: no such file or folder")
    if not is_user_dataset(path):
        raise DataError(f"{flag} {path}: not an image folder (one sub-folder per class) or a .npz file")
    return str(Path(path).expanduser().resolve())


def end_device_data_for_job(job, data: str | None = None, dataset: str | None = None):
    """The end device's :class:`jqodi.core.data.EndDeviceData` for ``job``: the job's data, or this
    device's copies ``data`` (the end device's data) and ``dataset`` (the cloud's dataset folder)
    in their place, checked against the job (input shape, class count). A path of the job this
    device lacks raises one line naming how the scenario wrote it and the flag to pass."""
    from jqodi.core.data import end_device_data
    from jqodi.core.userdata import is_user_dataset

    d = job.data
    name = _override(d.name, data, "--data", "end-device data") or d.name
    cloud = _override(d.dataset, dataset, "--dataset", "cloud dataset")
    if cloud is None:
        # one folder for both (your own data pretrains and fine-tunes): --data names both
        cloud = name if data is not None and d.dataset == d.name else d.dataset
    for path, job_path, written, flag, what in ((name, d.name, d.name_written, "--data", "end-device data"),
                                                (cloud, d.dataset, d.dataset_written, "--dataset",
                                                 "cloud dataset")):
        if path == job_path and is_user_dataset(path) and not Path(path).exists():
            raise DataError(missing_data_line(path, written, flag, what))
    sd = end_device_data(name, cloud, d.data_dir, d.train_size, d.val_size, d.seed)
    passed = " ".join(f"{f} {p}" for f, p in (("--data", data), ("--dataset", dataset)) if p is not None)
    if passed and tuple(sd.input_shape) != tuple(job.input_shape):
        raise DataError(f"{passed}: images are {_shape(sd.input_shape)}, the job's model expects "
                        f"{_shape(job.input_shape)}: not the job's data")
    if passed and int(sd.num_classes) != int(job.num_classes):
        raise DataError(f"{passed}: {sd.num_classes} classes, the job's model has {job.num_classes} outputs: "
                        f"not the job's data")
    return sd
