"""Base directions: SGD and Adam/AdamW with the update rules torch.optim documents, in place."""
from .backend import array_module


class SGD:
    """SGD with momentum, dampening, Nesterov and coupled weight decay."""

    def __init__(self, lr=0.1, momentum=0.0, nesterov=False, dampening=0.0, weight_decay=0.0):
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.dampening, self.weight_decay = dampening, weight_decay
        self.buffers = {}

    def update(self, name, param, grad, out=None):
        """Apply one step to `param` in place; the step taken (param_new - param_old) goes to `out`
        (a preallocated array like `param`, so the hot path allocates nothing) and is returned."""
        xp = array_module(param)
        out = xp.empty_like(param) if out is None else out
        out[...] = grad
        if self.weight_decay:
            out += self.weight_decay * param
        if self.momentum:
            buf = self.buffers.get(name)
            if buf is None:  # torch starts the buffer at the first gradient, undamped
                buf = self.buffers[name] = out.copy()
            else:
                buf *= self.momentum
                if self.dampening:
                    buf += (1.0 - self.dampening) * out
                else:
                    buf += out
            if self.nesterov:
                out += self.momentum * buf
            else:
                out[...] = buf
        out *= -self.lr
        param += out
        return out

    def state(self):
        return {f"momentum/{k}": v for k, v in self.buffers.items()}

    def load_state(self, state):
        self.buffers = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith("momentum/")}

    def forget(self, name, band):
        """Zero the state of pruned elements (a groups.Band of `name`), so nothing pushes them back."""
        buf = self.buffers.get(name)
        if buf is not None:
            band.fill(buf, 0)


class AdamW:
    """Adam (decoupled=False: L2 added to the gradient) or AdamW (decoupled weight decay); bias-corrected,
    moments initialised to zero."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decoupled=True):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.m, self.v, self.steps = {}, {}, {}

    def update(self, name, param, grad, out=None):
        """As SGD.update: step applied to `param` in place, written to `out` and returned."""
        xp = array_module(param)
        out = xp.empty_like(param) if out is None else out
        b1, b2 = self.betas
        if name not in self.m:
            self.m[name], self.v[name], self.steps[name] = xp.zeros_like(param), xp.zeros_like(param), 0
        self.steps[name] += 1
        t = self.steps[name]
        g = grad
        if self.weight_decay and not self.decoupled:
            g = grad + self.weight_decay * param  # Adam's L2: part of the gradient, so of both moments
        m, v = self.m[name], self.v[name]
        xp.multiply(g, g, out=out)  # `out` doubles as scratch: no temporaries on the hot path
        out *= 1 - b2
        v *= b2
        v += out
        xp.multiply(g, 1 - b1, out=out)
        m *= b1
        m += out
        xp.sqrt(v, out=out)
        out *= 1.0 / (1 - b2 ** t) ** 0.5
        out += self.eps
        xp.divide(m, out, out=out)
        out *= -self.lr / (1 - b1 ** t)
        if self.weight_decay and self.decoupled:
            out -= (self.lr * self.weight_decay) * param
        param += out
        return out

    def state(self):
        out = {f"m/{k}": v for k, v in self.m.items()}
        out.update({f"v/{k}": v for k, v in self.v.items()})
        out.update({f"steps/{k}": v for k, v in self.steps.items()})
        return out

    def load_state(self, state):
        self.m = {k[2:]: v for k, v in state.items() if k.startswith("m/")}
        self.v = {k[2:]: v for k, v in state.items() if k.startswith("v/")}
        self.steps = {k[6:]: int(v) for k, v in state.items() if k.startswith("steps/")}

    def forget(self, name, band):
        for store in (self.m, self.v):
            if name in store:
                band.fill(store[name], 0)
