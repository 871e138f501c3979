"""The metric of a model on data: accuracy for class labels, else the mean squared error."""
import numpy as np

from ..train.data import LABELS


def metric_kind(dataset, loss_kind):
    if dataset is None:
        return None
    if dataset.has_labels and np.issubdtype(dataset.labels.dtype, np.integer) and loss_kind != "mse":
        return "accuracy"
    return "mse"


def evaluate(session, dataset, kind, teacher=None, batch_size=256):
    """Accuracy (fraction) or MSE of an onnxruntime InferenceSession over `dataset`.

    Without labels the MSE is against the teacher session's outputs (distillation)."""
    if dataset is None or kind is None:
        return None
    names = [i.name for i in session.get_inputs()]
    correct = total = 0
    squared = 0.0
    for batch in dataset.batches(batch_size):
        feeds = {n: batch[n] for n in names}
        outputs = session.run(None, feeds)
        if kind == "accuracy":
            correct += int(np.sum(np.argmax(outputs[0], axis=-1) == batch[LABELS]))
            total += len(batch[LABELS])
            continue
        targets = [batch[LABELS]] if LABELS in batch else teacher.run(None, feeds)
        for out, target in zip(outputs, targets):
            squared += float(np.sum((out.astype(np.float64) - np.reshape(target, out.shape)) ** 2))
            total += out.size
    return correct / total if kind == "accuracy" else squared / max(total, 1)
