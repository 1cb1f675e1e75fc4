from feedback_loop_sample.cli import main

main()
