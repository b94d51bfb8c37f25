"""What the source counts, apart from the bindings so that plain Python can
test it (`make test`)."""

from typing import List


class Counter:
    """Hands out the numbers start, start+1, ... below `count` (0: no end)."""

    def __init__(self, count: int, start: int):
        self.count = count
        self.next = start

    def done(self) -> bool:
        return self.count > 0 and self.next >= self.count

    def take(self, max: int) -> List[int]:
        """Up to `max` next numbers."""
        numbers = []
        while len(numbers) < max and not self.done():
            numbers.append(self.next)
            self.next += 1
        return numbers
