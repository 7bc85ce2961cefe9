from gpa_plan.launch import main

main()
