from rlhfx.cli import main

main()
