"""What each module does (one file per module), over the engine; the modules only translate options."""
