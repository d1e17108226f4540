"""tensorrt_llm/module.py stand-in: registration and named_parameters() order as the real Module."""

from .parameter import Parameter


class Module:
    def __init__(self):
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_parameters", {})

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self.__dict__.get("_modules", {}).pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self.__dict__.get("_parameters", {}).pop(name, None)
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name, param):
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def named_parameters(self, prefix=""):
        for name, p in self._parameters.items():
            if p is not None:
                yield prefix + name, p
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_parameters(prefix + name + ".")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


class ModuleList(Module):
    def __init__(self, modules):
        super().__init__()
        self._list = list(modules)
        for i, m in enumerate(self._list):
            self._modules[str(i)] = m

    def __iter__(self):
        return iter(self._list)

    def __len__(self):
        return len(self._list)

    def __getitem__(self, i):
        return self._list[i]
