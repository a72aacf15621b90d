"""The real board: adb discovery and the board doctor, board configuration."""
