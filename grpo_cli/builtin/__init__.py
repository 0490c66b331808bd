"""What ships so that every command works offline with no options: the arithmetic task (arith), the
tiny model's recipe (tiny) and the model itself (tiny-model/)."""
