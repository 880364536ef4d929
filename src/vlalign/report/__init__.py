"""The comparison report over every run: tables, figures, markdown and HTML."""
