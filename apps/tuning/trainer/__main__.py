from apps.tuning.trainer.train import main

main()
