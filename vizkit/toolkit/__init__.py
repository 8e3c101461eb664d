"""What several analyses share: running top-k, winners' projections, channel selections,
figures, training-run folders, multi-process helpers and progress bars."""
