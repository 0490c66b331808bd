from grpo_cli.cli.main import run

run()
