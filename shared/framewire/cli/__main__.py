from framewire.cli import main

main()
