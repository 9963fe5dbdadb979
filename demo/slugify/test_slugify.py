import unittest

from slugify import slugify


class SlugifyTest(unittest.TestCase):
    def test_lowercase_and_dashes(self):
        self.assertEqual(slugify("Hello World"), "hello-world")

    def test_punctuation_dropped(self):
        self.assertEqual(slugify("Ready, set... go!"), "ready-set-go")

    def test_surrounding_space(self):
        self.assertEqual(slugify("  spaced  out  "), "spaced-out")


if __name__ == "__main__":
    unittest.main()
