from contraseg.cli import main

main()
