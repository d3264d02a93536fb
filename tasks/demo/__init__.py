"""Demo data: a seeded, realistic synthetic book of business for demos, load and end-to-end tests."""

from tasks.demo.generator import Book, Truth, generate_book

__all__ = ["Book", "Truth", "generate_book"]
