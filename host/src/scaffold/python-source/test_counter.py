import unittest

from counter import Counter


class CounterTest(unittest.TestCase):
    def test_hands_out_numbers_up_to_count(self):
        counter = Counter(5, 0)
        self.assertEqual(counter.take(3), [0, 1, 2])
        self.assertEqual(counter.take(3), [3, 4])
        self.assertTrue(counter.done())
        self.assertEqual(counter.take(3), [])

    def test_resumes_where_it_is_told(self):
        self.assertEqual(Counter(0, 7).take(2), [7, 8])


if __name__ == "__main__":
    unittest.main()
