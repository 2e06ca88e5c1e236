from fmctl.cli import main

main()
