"""One screen per section of the studio, plus the help screen and modal dialogs."""
