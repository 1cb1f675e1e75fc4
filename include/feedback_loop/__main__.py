from feedback_loop.cli import main

main()
