"""GPT language models: prepare text into token files, train, sample, export."""
