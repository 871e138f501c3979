"""The metric of a model on data: accuracy for class labels, else the mean squared error."""
import numpy as np

from ..train import LABELS


def metric_kind(dataset, loss):
    """accuracy for integer class labels (unless the loss, a train.Loss, fits values), else mse."""
    if dataset is None:
        return None
    if dataset.has_labels and np.issubdtype(dataset.labels.dtype, np.integer) and not (loss and loss.regression):
        return "accuracy"
    return "mse"


def session_model(session):
    """(input names, predict) of an onnxruntime InferenceSession."""
    return [i.name for i in session.get_inputs()], lambda feeds: session.run(None, feeds)


def training_model(session):
    """(input names, predict) of a TrainingSession in eval mode: no export needed during training."""
    def predict(feeds):
        outputs = session.eval_outputs(feeds)
        return [outputs[n] for n in session.output_names]
    return list(session.input_names), predict


def evaluate(model, dataset, kind, teacher=None, batch_size=256):
    """Accuracy (fraction) or MSE of `model` (input names, predict) over `dataset`.

    Without labels the MSE is against the teacher's outputs (distillation)."""
    if dataset is None or kind is None:
        return None
    names, predict = model
    correct = total = 0
    squared = 0.0
    for batch in dataset.batches(batch_size):
        feeds = {n: batch[n] for n in names}
        outputs = predict(feeds)
        if kind == "accuracy":
            correct += int(np.sum(np.argmax(outputs[0], axis=-1) == batch[LABELS]))
            total += len(batch[LABELS])
            continue
        targets = [batch[LABELS]] if LABELS in batch else teacher[1](feeds)
        for out, target in zip(outputs, targets):
            squared += float(np.sum((out.astype(np.float64) - np.reshape(target, out.shape)) ** 2))
            total += out.size
    return correct / total if kind == "accuracy" else squared / max(total, 1)
