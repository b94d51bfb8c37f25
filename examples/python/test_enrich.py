import json
import unittest

from enrich import Rules


class RulesTest(unittest.TestCase):
    rules = Rules(where={"level": "error"}, add={"pipeline": "py"})

    def test_keeps_matching_objects_and_adds_fields(self):
        line = self.rules.apply(b'{"level":"error","n":1}', "/default/in", 7)
        self.assertEqual(
            json.loads(line),
            {"level": "error", "n": 1, "pipeline": "py", "_topic": "/default/in", "_offset": 7},
        )

    def test_skips_objects_that_do_not_match(self):
        self.assertIsNone(self.rules.apply(b'{"level":"info"}', "/default/in", 0))

    def test_rejects_what_is_not_a_json_object(self):
        for payload in (b"not json", b"[1,2]"):
            with self.assertRaises(ValueError):
                self.rules.apply(payload, "/default/in", 0)


if __name__ == "__main__":
    unittest.main()
