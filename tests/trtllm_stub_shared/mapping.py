"""tensorrt_llm/mapping.py stand-in (tp fastest: rank = pp_rank * tp_size + tp_rank)."""


class Mapping:
    def __init__(self, world_size=1, rank=0, tp_size=1, pp_size=1, **unused):
        # tensorrt_llm/mapping.py: "world_size must equal to pp_size * cp_size * tp_size" (a ValueError),
        # and world_size defaults to 1, so Mapping(tp_size=2) alone is refused too.
        if tp_size * pp_size != world_size:
            raise ValueError(f"world_size must equal to pp_size * cp_size * tp_size, but got "
                             f"{world_size} != {pp_size} * 1 * {tp_size}")
        self.world_size, self.rank, self.tp_size, self.pp_size = world_size, rank, tp_size, pp_size

    @property
    def tp_rank(self):
        return self.rank % self.tp_size

    @property
    def pp_rank(self):
        return self.rank // self.tp_size

    @property
    def tp_group(self):
        base = self.pp_rank * self.tp_size
        return list(range(base, base + self.tp_size))

    def pp_layers(self, num_layers):  # 1.2.x: torch.tensor_split(torch.arange(num_layers), pp_size)[pp_rank]
        base, extra = divmod(num_layers, self.pp_size)
        start = self.pp_rank * base + min(self.pp_rank, extra)
        return list(range(start, start + base + (1 if self.pp_rank < extra else 0)))

    def is_first_pp_rank(self):
        return self.pp_rank == 0

    def is_last_pp_rank(self):
        return self.pp_rank == self.pp_size - 1

    def prev_pp_rank(self):
        return self.rank - self.tp_size

    def next_pp_rank(self):
        return self.rank + self.tp_size

    @classmethod
    def from_dict(cls, d):
        return cls(**d)

    def to_dict(self):
        return {"world_size": self.world_size, "rank": self.rank, "tp_size": self.tp_size, "pp_size": self.pp_size}
