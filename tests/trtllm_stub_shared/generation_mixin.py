class GenerationMixin:
    @staticmethod
    def default_range(max_range, offset=0):
        return [elem + offset for elem in (1, (max_range + 1) // 2, max_range)]
