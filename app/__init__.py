"""Everything around the learning algorithm: what the command line, the page and the outputs use."""
