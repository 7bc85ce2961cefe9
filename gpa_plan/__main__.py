from gpa_plan.cli import main

main()
