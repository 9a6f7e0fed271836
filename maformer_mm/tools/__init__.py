"""The code behind `tools/*.py`: each tool there is a thin entry point to a `main(argv)` here, so that the
demos, the tests and users' own scripts call the same functions in-process, without path tricks."""
